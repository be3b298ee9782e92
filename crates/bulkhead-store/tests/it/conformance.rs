//! The backend-independent conformance suite. Each check takes a factory
//! that opens a store on a directory (a PostgreSQL backend would ignore the
//! directory and use a fresh schema), so the same checks run everywhere.

use std::path::Path;
use std::sync::Arc;

use bulkhead_auth::{
    Authenticator, Directory, JwtVerifier, OperatorAuthenticator, OperatorScope, TenantScope,
};
use bulkhead_core::audit::{AuditAction, GENESIS_HASH, NewAuditEvent, Outcome, verify_chain};
use bulkhead_core::tenant::TenantPatch;
use bulkhead_core::{
    ApiKeyId, Isolation, Region, RequestId, Role, SecretString, TenantId, TenantStatus,
};
use bulkhead_store::{ControlStore, NewApiKeyRecord, NewTenant, Page, StoreError, TenantStore};

pub trait Backend: ControlStore + TenantStore + Directory + Clone + 'static {}
impl<T: ControlStore + TenantStore + Directory + Clone + 'static> Backend for T {}

pub fn op() -> OperatorScope {
    let token = "conformance-operator-token";
    OperatorAuthenticator::new(&SecretString::new(token.into()))
        .verify(Some(token), &RequestId::generate())
        .unwrap()
}

pub fn tid(s: &str) -> TenantId {
    TenantId::parse(s).unwrap()
}

pub async fn create(store: &impl Backend, id: &str) {
    store
        .create_tenant(
            &op(),
            NewTenant {
                id: tid(id),
                name: format!("{id} Inc"),
                region: Region::parse("eu").unwrap(),
                isolation: Isolation::Shared,
            },
        )
        .await
        .unwrap();
}

/// A scope for `tenant`, obtained the only way code can: by authenticating
/// a key recorded in the store.
pub async fn scope(store: &impl Backend, tenant: &str) -> TenantScope {
    let key = bulkhead_auth::apikey::generate().unwrap();
    store
        .create_api_key(
            &op(),
            &tid(tenant),
            NewApiKeyRecord {
                id: key.id,
                digest: key.digest,
                name: None,
                roles: vec![Role::Admin],
                expires_at: None,
            },
        )
        .await
        .unwrap();
    let auth = Authenticator::new(JwtVerifier::default(), Arc::new(store.clone()));
    auth.authenticate(Some(key.plaintext.expose()), None, &RequestId::generate())
        .await
        .unwrap()
}

/// An event whose target is `marker`, to find it again.
pub fn event(marker: &str) -> NewAuditEvent {
    NewAuditEvent::new(
        AuditAction::PoliciesUpdate,
        marker,
        Outcome::Success,
        RequestId::generate(),
    )
}

const ALL: Page = Page {
    after: 0,
    limit: 1000,
};

pub async fn tenants_crud<S: Backend>(open: impl Fn(&Path) -> S) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    create(&store, "acme").await;
    let dup = store
        .create_tenant(
            &op(),
            NewTenant {
                id: tid("acme"),
                name: "again".into(),
                region: Region::parse("us").unwrap(),
                isolation: Isolation::Dedicated,
            },
        )
        .await;
    assert!(matches!(dup, Err(StoreError::Conflict(_))), "{dup:?}");
    let t = store
        .update_tenant(
            &op(),
            &tid("acme"),
            TenantPatch {
                status: Some(TenantStatus::Suspended),
                isolation: Some(Isolation::Dedicated),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        (t.status, t.isolation, t.name.as_str()),
        (TenantStatus::Suspended, Isolation::Dedicated, "acme Inc")
    );
    assert_eq!(store.get_tenant(&op(), &tid("acme")).await.unwrap(), t);
    assert!(matches!(
        store.get_tenant(&op(), &tid("nobody")).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store
            .update_tenant(&op(), &tid("nobody"), TenantPatch::default())
            .await,
        Err(StoreError::NotFound)
    ));
    create(&store, "beta").await;
    let ids: Vec<String> = store
        .list_tenants(&op())
        .await
        .unwrap()
        .iter()
        .map(|t| t.id.to_string())
        .collect();
    assert_eq!(ids, ["acme", "beta"]);
    store.delete_tenant(&op(), &tid("acme")).await.unwrap();
    assert!(matches!(
        store.delete_tenant(&op(), &tid("acme")).await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(store.list_tenants(&op()).await.unwrap().len(), 1);
}

pub async fn partitions_are_isolated<S: Backend>(open: impl Fn(&Path) -> S) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    create(&store, "acme").await;
    create(&store, "globex").await;
    let a = scope(&store, "acme").await;
    let g = scope(&store, "globex").await;
    store
        .append_audit(&a, event("acme.secret-thing"))
        .await
        .unwrap();
    let mine = store.audit(&a, ALL).await.unwrap();
    let theirs = store.audit(&g, ALL).await.unwrap();
    assert!(mine.iter().any(|e| e.target == "acme.secret-thing"));
    assert!(
        theirs.iter().all(|e| e.tenant.as_ref() == Some(g.tenant())),
        "{theirs:?}"
    );
    assert!(theirs.iter().all(|e| e.target != "acme.secret-thing"));
    assert_eq!(
        verify_chain(&mine, GENESIS_HASH).unwrap(),
        mine.len() as u64
    );
    assert_eq!(
        verify_chain(&theirs, GENESIS_HASH).unwrap(),
        theirs.len() as u64
    );
}

pub async fn deleted_tenants_leave_nothing_behind<S: Backend>(open: impl Fn(&Path) -> S) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    create(&store, "acme").await;
    let old = scope(&store, "acme").await;
    store.append_audit(&old, event("old.data")).await.unwrap();
    store.delete_tenant(&op(), &tid("acme")).await.unwrap();
    // A scope minted before the deletion reaches nothing afterwards.
    assert!(matches!(
        store.audit(&old, ALL).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store.append_audit(&old, event("late")).await,
        Err(StoreError::NotFound)
    ));
    create(&store, "acme").await;
    let new = scope(&store, "acme").await;
    assert_ne!(new.partition(), old.partition());
    let events = store.audit(&new, ALL).await.unwrap();
    assert!(
        events
            .iter()
            .all(|e| e.target != "old.data" && e.target != "late"),
        "{events:?}"
    );
    // The old scope still reaches nothing, although the id exists again.
    assert!(matches!(
        store.audit(&old, ALL).await,
        Err(StoreError::NotFound)
    ));
}

pub async fn api_keys_lifecycle<S: Backend>(open: impl Fn(&Path) -> S) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    create(&store, "acme").await;
    create(&store, "globex").await;
    let key = bulkhead_auth::apikey::generate().unwrap();
    let rec = store
        .create_api_key(
            &op(),
            &tid("acme"),
            NewApiKeyRecord {
                id: key.id,
                digest: key.digest,
                name: Some("ci".into()),
                roles: vec![Role::Viewer],
                expires_at: None,
            },
        )
        .await
        .unwrap();
    let (found, tenant) = store.api_key(&key.digest).await.unwrap().unwrap();
    assert_eq!((found.id, tenant.id.as_str()), (rec.id, "acme"));
    assert!(matches!(
        store.revoke_api_key(&op(), &tid("globex"), rec.id).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store
            .revoke_api_key(&op(), &tid("acme"), ApiKeyId::generate())
            .await,
        Err(StoreError::NotFound)
    ));
    let revoked = store
        .revoke_api_key(&op(), &tid("acme"), rec.id)
        .await
        .unwrap();
    assert!(revoked.revoked_at.is_some());
    let again = store
        .revoke_api_key(&op(), &tid("acme"), rec.id)
        .await
        .unwrap();
    assert_eq!(
        again.revoked_at, revoked.revoked_at,
        "a second revocation moved the date"
    );
    assert!(
        store
            .api_key(&key.digest)
            .await
            .unwrap()
            .unwrap()
            .0
            .revoked_at
            .is_some()
    );
    assert!(
        store
            .list_api_keys(&op(), &tid("globex"))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store
            .list_api_keys(&op(), &tid("acme"))
            .await
            .unwrap()
            .len(),
        1
    );
    store.delete_tenant(&op(), &tid("acme")).await.unwrap();
    assert!(store.api_key(&key.digest).await.unwrap().is_none());
}

pub async fn chains_survive_restart_and_concurrency<S: Backend>(open: impl Fn(&Path) -> S) {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        create(&store, "acme").await;
        let s = scope(&store, "acme").await;
        let mut tasks = Vec::new();
        for i in 0..20 {
            let store = store.clone();
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                store.append_audit(&s, event(&format!("e{i}"))).await
            }));
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
    }
    let store = open(dir.path());
    let s = scope(&store, "acme").await;
    let events = store.audit(&s, ALL).await.unwrap();
    // tenant.create, api_key.create, 20 appends, then the second api_key.create.
    assert_eq!(verify_chain(&events, GENESIS_HASH), Ok(23));
    let ops = store.operator_audit(&op(), ALL).await.unwrap();
    assert_eq!(verify_chain(&ops, GENESIS_HASH), Ok(3));
    let page = store
        .audit(
            &s,
            Page {
                after: 10,
                limit: 5,
            },
        )
        .await
        .unwrap();
    assert_eq!(
        page.iter().map(|e| e.seq).collect::<Vec<_>>(),
        [11, 12, 13, 14, 15]
    );
}

/// Alert rules and alert events: per tenant, written with their audit
/// event, paged in order, kept across a reopen, absent for another tenant.
pub async fn alert_rules_and_events<S: Backend>(open: impl Fn(&Path) -> S) {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        create(&store, "acme").await;
        create(&store, "globex").await;
        let a = scope(&store, "acme").await;
        let g = scope(&store, "globex").await;
        assert_eq!(store.alert_rules(&a).await.unwrap(), None);
        let rules = r#"{"rules":[],"webhook":null}"#.to_owned();
        store
            .set_alert_rules(&a, Some(rules.clone()), event("acme.rules"))
            .await
            .unwrap();
        assert_eq!(store.alert_rules(&a).await.unwrap(), Some(rules));
        assert_eq!(store.alert_rules(&g).await.unwrap(), None);
        for (i, t) in ["alert.fired", "alert.resolved", "alert.fired"]
            .iter()
            .enumerate()
        {
            let seq = store
                .record_alert(
                    &a,
                    format!(r#"{{"type":"{t}"}}"#),
                    event(&format!("acme.alert.{i}")),
                )
                .await
                .unwrap();
            assert_eq!(seq, i as u64 + 1);
        }
        let page = store
            .alert_events(&a, Page { after: 1, limit: 1 })
            .await
            .unwrap();
        assert_eq!(page.len(), 1);
        assert_eq!(
            (page[0].seq, page[0].body.as_str()),
            (2, r#"{"type":"alert.resolved"}"#)
        );
        assert!(store.alert_events(&g, ALL).await.unwrap().is_empty());
        // Each transition is in the chain with it.
        let chain = store.audit(&a, ALL).await.unwrap();
        assert_eq!(
            chain
                .iter()
                .filter(|e| e.target.starts_with("acme.alert."))
                .count(),
            3
        );
        // Removing the rules leaves the events.
        store
            .set_alert_rules(&a, None, event("acme.rules.cleared"))
            .await
            .unwrap();
        assert_eq!(store.alert_rules(&a).await.unwrap(), None);
    }
    let store = open(dir.path());
    let a = scope(&store, "acme").await;
    assert_eq!(store.alert_events(&a, ALL).await.unwrap().len(), 3);
}
