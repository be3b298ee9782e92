//! The in-memory vault store keeps the SQLite store's semantics: owners
//! apart, compare-and-swap on versions and wrapped keys, ordering.

use bulkhead_core::audit::{AuditAction, NewAuditEvent, Outcome};
use bulkhead_core::{RequestId, Timestamp};
use bulkhead_vault::credential::{ConnectionName, CredentialKind, CredentialStatus};
use bulkhead_vault::kms::WrappedKey;
use bulkhead_vault::memory::MemoryVaultStore;
use bulkhead_vault::store::{
    CredScope, KeyOwner, StoredCredential, StoredDataKey, VaultStore, VaultStoreError,
};

use crate::support::{op, scope};

fn ev() -> NewAuditEvent {
    NewAuditEvent::new(
        AuditAction::CredentialPut,
        "connection:x",
        Outcome::Success,
        RequestId::generate(),
    )
}

fn cred(name: &str, version: u64) -> StoredCredential {
    let now = Timestamp::now();
    StoredCredential {
        connection: ConnectionName::parse(name).unwrap(),
        kind: CredentialKind::ApiKey,
        version,
        dek_version: 1,
        ciphertext: vec![version as u8],
        status: CredentialStatus::Active,
        expires_at: None,
        created_at: now,
        updated_at: now,
        last_used_at: None,
    }
}

fn key(owner: KeyOwner, version: u32, kek: u32) -> StoredDataKey {
    StoredDataKey {
        owner,
        version,
        wrapped: WrappedKey {
            provider: "memory".into(),
            key_id: "k".into(),
            key_version: kek,
            ciphertext: vec![version as u8, kek as u8],
        },
        created_at: Timestamp::now(),
    }
}

#[tokio::test]
async fn credentials_compare_and_swap_and_stay_with_their_owner() {
    let store = MemoryVaultStore::new();
    let (acme, globex) = (scope("acme"), scope("globex"));
    let a = CredScope::Tenant(&acme);
    let name = ConnectionName::parse("jira").unwrap();
    assert!(
        store
            .put_credential(a, &cred("jira", 1), None, ev())
            .await
            .unwrap()
    );
    // A stale expected version loses; the current one wins.
    assert!(
        !store
            .put_credential(a, &cred("jira", 2), Some(7), ev())
            .await
            .unwrap()
    );
    assert!(
        store
            .put_credential(a, &cred("jira", 2), Some(1), ev())
            .await
            .unwrap()
    );
    assert_eq!(
        store.credential(a, &name).await.unwrap().unwrap().version,
        2
    );
    // Expecting a row that does not exist loses too.
    assert!(
        !store
            .put_credential(a, &cred("slack", 1), Some(1), ev())
            .await
            .unwrap()
    );

    let g = CredScope::Tenant(&globex);
    assert_eq!(store.credential(g, &name).await.unwrap(), None);
    assert!(store.credentials(g).await.unwrap().is_empty());
    assert!(!store.delete_credential(g, &name, ev()).await.unwrap());
    store
        .put_credential(a, &cred("github", 1), None, ev())
        .await
        .unwrap();
    let names: Vec<String> = store
        .credentials(a)
        .await
        .unwrap()
        .iter()
        .map(|c| c.connection.as_str().to_owned())
        .collect();
    assert_eq!(names, ["github", "jira"], "by name");
    // The two successful writes and the github put were audited, the lost CAS not.
    assert_eq!(store.audit_events(a).len(), 3);
    assert!(store.audit_events(g).is_empty());

    store
        .touch_credential(a, &name, Timestamp::now(), ev())
        .await
        .unwrap();
    assert!(
        store
            .credential(a, &name)
            .await
            .unwrap()
            .unwrap()
            .last_used_at
            .is_some()
    );
    assert!(store.delete_credential(a, &name, ev()).await.unwrap());
    assert_eq!(store.credential(a, &name).await.unwrap(), None);
}

#[tokio::test]
async fn data_keys_conflict_rewrap_by_compare_and_swap_and_die_with_the_tenant() {
    let store = MemoryVaultStore::new();
    let (acme, op) = (scope("acme"), op());
    let a = CredScope::Tenant(&acme);
    let p = CredScope::Platform(&op);
    store
        .insert_data_key(a, &key(a.owner(), 1, 1), ev())
        .await
        .unwrap();
    store
        .insert_data_key(a, &key(a.owner(), 2, 2), ev())
        .await
        .unwrap();
    store
        .insert_data_key(p, &key(KeyOwner::Platform, 1, 1), ev())
        .await
        .unwrap();
    assert!(matches!(
        store.insert_data_key(a, &key(a.owner(), 1, 2), ev()).await,
        Err(VaultStoreError::Conflict)
    ));
    let versions: Vec<u32> = store
        .data_keys(a)
        .await
        .unwrap()
        .iter()
        .map(|k| k.version)
        .collect();
    assert_eq!(versions, [1, 2]);

    // Keys not under KEK version 2: acme's v1 and the platform's.
    let stale = store
        .stale_data_keys(&op, "memory", "k", 2, 10)
        .await
        .unwrap();
    assert_eq!(stale.len(), 2);
    let new = WrappedKey {
        provider: "memory".into(),
        key_id: "k".into(),
        key_version: 2,
        ciphertext: vec![9],
    };
    let pairs: Vec<_> = stale.iter().map(|k| (k.clone(), new.clone())).collect();
    assert_eq!(store.rewrap_data_keys(&op, &pairs).await.unwrap(), 2);
    // The same pairs again: the stored keys changed, nothing is replaced.
    assert_eq!(store.rewrap_data_keys(&op, &pairs).await.unwrap(), 0);
    assert!(
        store
            .stale_data_keys(&op, "memory", "k", 2, 10)
            .await
            .unwrap()
            .is_empty()
    );

    store.delete_data_key(a, 1, ev()).await.unwrap();
    assert_eq!(store.data_keys(a).await.unwrap().len(), 1);
    store.delete_tenant(&acme);
    assert!(matches!(
        store.data_keys(a).await,
        Err(VaultStoreError::NotFound)
    ));
    assert!(matches!(
        store.insert_data_key(a, &key(a.owner(), 3, 2), ev()).await,
        Err(VaultStoreError::NotFound)
    ));
    assert_eq!(
        store.data_keys(p).await.unwrap().len(),
        1,
        "the platform's key stays"
    );
}
