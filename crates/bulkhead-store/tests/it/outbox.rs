//! The event bus outbox (`SqliteStore::open_with_outbox`): each tenant
//! event gets its outbox row (message id = event id, body = the stored
//! event), in chain order, per partition only; rows a stopped process
//! left are found again at the next open; without the outbox none are
//! written.

use bulkhead_store::sqlite::SqliteStore;
use bulkhead_store::{Page, TenantStore};

use crate::conformance::{create, event, scope};

const ALL: Page = Page {
    after: 0,
    limit: 1000,
};

#[tokio::test]
async fn each_event_has_its_outbox_row_in_its_own_partition_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open_with_outbox(dir.path()).unwrap();
    create(&store, "acme").await;
    create(&store, "globex").await;
    let a = scope(&store, "acme").await;
    let g = scope(&store, "globex").await;
    for i in 0..5 {
        store
            .append_audit(&a, event(&format!("a{i}")))
            .await
            .unwrap();
    }
    store.append_audit(&g, event("g0")).await.unwrap();

    let dirty = {
        let dirty = store.outbox_take_dirty().unwrap();
        let mut seen = Vec::new();
        for p in &dirty {
            let rows = store.outbox_pending(p, 100).await.unwrap();
            let s = if p.tenant().as_str() == "acme" {
                &a
            } else {
                &g
            };
            let chain = store.audit(s, ALL).await.unwrap();
            let ids: Vec<String> = chain.iter().map(|e| e.id.to_string()).collect();
            assert_eq!(
                rows.iter().map(|r| r.msg_id.clone()).collect::<Vec<_>>(),
                ids
            );
            for (row, e) in rows.iter().zip(&chain) {
                let body: serde_json::Value = serde_json::from_str(&row.payload).unwrap();
                assert_eq!(body["id"].as_str().unwrap(), e.id.to_string());
                assert_eq!(body["tenant"].as_str().unwrap(), p.tenant().as_str());
            }
            seen.push(p.tenant().to_string());
        }
        seen.sort();
        assert_eq!(seen, ["acme", "globex"]);
        dirty
    };
    // Sent rows go; the rest stay, in order.
    for p in &dirty {
        let first = store.outbox_pending(p, 1).await.unwrap();
        store.outbox_sent(p, first[0].id).await.unwrap();
    }
    let acme = dirty
        .iter()
        .find(|p| p.tenant().as_str() == "acme")
        .unwrap();
    let left = store.outbox_pending(acme, 100).await.unwrap();
    let chain = store.audit(&a, ALL).await.unwrap();
    assert_eq!(
        left.iter().map(|r| r.msg_id.clone()).collect::<Vec<_>>(),
        chain[1..]
            .iter()
            .map(|e| e.id.to_string())
            .collect::<Vec<_>>()
    );
    drop(dirty);
    drop(store);

    // Reopened (a new process): every tenant is marked, the rows are there.
    let store = SqliteStore::open_with_outbox(dir.path()).unwrap();
    store.outbox_mark_all().unwrap();
    let dirty = store.outbox_take_dirty().unwrap();
    let acme = dirty
        .iter()
        .find(|p| p.tenant().as_str() == "acme")
        .unwrap();
    assert_eq!(
        store.outbox_pending(acme, 100).await.unwrap().len(),
        left.len()
    );
}

#[tokio::test]
async fn without_the_outbox_no_row_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    create(&store, "acme").await;
    let a = scope(&store, "acme").await;
    store.append_audit(&a, event("x")).await.unwrap();
    drop(store);
    let store = SqliteStore::open_with_outbox(dir.path()).unwrap();
    store.outbox_mark_all().unwrap();
    let dirty = store.outbox_take_dirty().unwrap();
    assert_eq!(dirty.len(), 1);
    assert!(
        store
            .outbox_pending(&dirty[0], 100)
            .await
            .unwrap()
            .is_empty()
    );
}
