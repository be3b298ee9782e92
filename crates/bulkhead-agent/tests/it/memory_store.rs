//! The in-memory stores keep the SQLite store's semantics: partitions per
//! tenant incarnation, the same order, the same refusals, and writes that
//! happen whole or not at all.

use bulkhead_agent::approval::{Approval, ApprovalStatus, Settled};
use bulkhead_agent::knowledge::{
    ChunkRow, DocumentInfo, KnowledgeStore, KnowledgeStoreError, StorageLimit,
};
use bulkhead_agent::memory::{MemoryAgentStore, MemoryKnowledgeStore};
use bulkhead_agent::store::{Deletion, StepWrite};
use bulkhead_agent::{AgentStore, RunRecord, RunStatus, Step};
use bulkhead_auth::TenantScope;
use bulkhead_core::audit::{AuditAction, NewAuditEvent, Outcome};
use bulkhead_core::{ApprovalId, RequestId, Role, RunId, ThreadId, Timestamp};
use serde_json::json;

use crate::support::World;

fn event() -> NewAuditEvent {
    NewAuditEvent::new(
        AuditAction::RunStart,
        "run:x",
        Outcome::Success,
        RequestId::generate(),
    )
}

fn record(thread: ThreadId) -> RunRecord {
    RunRecord {
        id: RunId::generate(),
        thread_id: thread,
        agent: "support".into(),
        principal: "key:1".into(),
        status: RunStatus::Running,
        created_at: Timestamp::now(),
        finished_at: None,
        output: None,
        error: None,
        input_tokens: 0,
        output_tokens: 0,
        steps: Vec::new(),
    }
}

fn step(seq: u32) -> StepWrite {
    StepWrite {
        step: Step {
            seq,
            kind: "model_call".into(),
            data: json!({"n": seq}),
            time: Timestamp::now(),
        },
        message: Some(json!({"role": "assistant", "content": format!("m{seq}")})),
        event: None,
    }
}

fn approval(run: RunId, created_at: Timestamp, expires_at: Timestamp) -> Approval {
    Approval {
        id: ApprovalId::generate(),
        status: ApprovalStatus::Pending,
        run_id: run,
        agent: "support".into(),
        tool: "slack".into(),
        tool_call_id: "call_0".into(),
        connection: Some("slack".into()),
        arguments: json!({"text": "hi"}),
        arguments_hash: bulkhead_agent::approval::arguments_hash(&json!({"text": "hi"})),
        summary: "post".into(),
        requested_by: "key:1".into(),
        requested_roles: vec![Role::Member],
        round: 1,
        created_at,
        expires_at,
        decided_by: None,
        decided_at: None,
        comment: None,
    }
}

async fn begun(store: &MemoryAgentStore, scope: &TenantScope) -> RunRecord {
    let run = record(ThreadId::generate());
    store
        .begin_run(
            scope,
            &run,
            true,
            &json!({"role": "user", "content": "in"}),
            event(),
        )
        .await
        .unwrap();
    run
}

async fn two_tenants() -> (World, TenantScope, TenantScope) {
    let w = World::new().await;
    let acme = w.tenant("acme", &[Role::Member]).await;
    let globex = w.tenant("globex", &[Role::Member]).await;
    (w, acme, globex)
}

#[tokio::test]
async fn another_tenants_runs_threads_and_approvals_are_unreachable() {
    let (_w, acme, globex) = two_tenants().await;
    let store = MemoryAgentStore::new();
    let run = begun(&store, &acme).await;
    let now = Timestamp::now();
    store
        .pause_run(
            &acme,
            &run,
            vec![step(1)],
            &[approval(run.id, now, now.plus_seconds(60))],
        )
        .await
        .unwrap();
    assert!(store.run(&globex, run.id).await.unwrap().is_none());
    assert!(!store.thread_exists(&globex, run.thread_id).await.unwrap());
    assert!(
        store
            .messages(&globex, run.thread_id)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .approvals(&globex, None, None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store.delete_run(&globex, run.id, event()).await.unwrap(),
        Deletion::NotFound
    );
    assert_eq!(
        store
            .delete_thread(&globex, run.thread_id, event())
            .await
            .unwrap(),
        Deletion::NotFound
    );
    // Still all there for its own tenant.
    let mine = store.run(&acme, run.id).await.unwrap().unwrap();
    assert_eq!(
        (mine.status, mine.steps.len()),
        (RunStatus::AwaitingApproval, 1)
    );
    assert_eq!(
        store
            .messages(&acme, run.thread_id)
            .await
            .unwrap()
            .unwrap()
            .len(),
        2
    );
}

#[tokio::test]
async fn a_write_that_fails_leaves_nothing_behind() {
    let (_w, acme, _) = two_tenants().await;
    let store = MemoryAgentStore::new();
    let run = begun(&store, &acme).await;
    store
        .finish_run(
            &acme,
            &RunRecord {
                status: RunStatus::Completed,
                ..run.clone()
            },
            vec![],
            event(),
        )
        .await
        .unwrap();
    let now = Timestamp::now();
    // Pausing a run that is no longer running is refused, steps and all.
    let paused = store
        .pause_run(
            &acme,
            &run,
            vec![step(1)],
            &[approval(run.id, now, now.plus_seconds(60))],
        )
        .await;
    assert!(paused.is_err());
    let stored = store.run(&acme, run.id).await.unwrap().unwrap();
    assert_eq!(
        (stored.status, stored.steps.len()),
        (RunStatus::Completed, 0)
    );
    assert!(
        store
            .approvals(&acme, None, None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    // A step number is written once.
    store
        .append_steps(&acme, run.id, vec![step(1)])
        .await
        .unwrap();
    assert!(
        store
            .append_steps(&acme, run.id, vec![step(2), step(1)])
            .await
            .is_err()
    );
    assert_eq!(
        store.run(&acme, run.id).await.unwrap().unwrap().steps.len(),
        1
    );
}

#[tokio::test]
async fn approvals_list_newest_first_and_settle_once() {
    let (_w, acme, _) = two_tenants().await;
    let store = MemoryAgentStore::new();
    let run = begun(&store, &acme).await;
    let now = Timestamp::now();
    let older = approval(run.id, now.plus_seconds(-10), now.plus_seconds(60));
    let newer = approval(run.id, now, now.plus_seconds(60));
    store
        .pause_run(&acme, &run, vec![], &[older.clone(), newer.clone()])
        .await
        .unwrap();
    let listed = store.approvals(&acme, None, None, 10).await.unwrap();
    assert_eq!(
        listed.iter().map(|a| a.id).collect::<Vec<_>>(),
        [newer.id, older.id]
    );
    assert_eq!(
        store.approvals(&acme, None, None, 1).await.unwrap().len(),
        1
    );
    // Expiring before the expiry changes nothing.
    let early = store
        .settle_approval(&acme, older.id, ApprovalStatus::Expired, None, now, event())
        .await
        .unwrap();
    assert!(matches!(early, Some(Settled::Unchanged(_))), "{early:?}");
    // The first decision leaves one pending: no resume; the last claims the run.
    let first = store
        .settle_approval(
            &acme,
            older.id,
            ApprovalStatus::Approved,
            None,
            now,
            event(),
        )
        .await
        .unwrap();
    assert!(
        matches!(first, Some(Settled::Changed { resume: false, .. })),
        "{first:?}"
    );
    let last = store
        .settle_approval(
            &acme,
            newer.id,
            ApprovalStatus::Denied,
            Some("no".into()),
            now,
            event(),
        )
        .await
        .unwrap();
    let Some(Settled::Changed {
        approval,
        resume: true,
    }) = last
    else {
        panic!("the last decision resumes: {last:?}");
    };
    assert_eq!(approval.decided_by.as_deref(), Some(acme.principal().id()));
    assert_eq!(approval.comment.as_deref(), Some("no"));
    assert_eq!(
        store.run(&acme, run.id).await.unwrap().unwrap().status,
        RunStatus::Running
    );
    let again = store
        .settle_approval(
            &acme,
            newer.id,
            ApprovalStatus::Approved,
            None,
            now,
            event(),
        )
        .await
        .unwrap();
    assert!(matches!(again, Some(Settled::Unchanged(a)) if a.status == ApprovalStatus::Denied));
    assert!(
        store
            .settle_approval(
                &acme,
                ApprovalId::generate(),
                ApprovalStatus::Approved,
                None,
                now,
                event()
            )
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn busy_runs_are_not_deleted_and_retention_keeps_only_metadata() {
    let (_w, acme, _) = two_tenants().await;
    let store = MemoryAgentStore::new();
    let run = begun(&store, &acme).await;
    assert_eq!(
        store.delete_run(&acme, run.id, event()).await.unwrap(),
        Deletion::InProgress
    );
    assert_eq!(
        store
            .delete_thread(&acme, run.thread_id, event())
            .await
            .unwrap(),
        Deletion::InProgress
    );
    let ended = RunRecord {
        status: RunStatus::Completed,
        finished_at: Some(Timestamp::now()),
        output: Some("answer".into()),
        ..run.clone()
    };
    store
        .finish_run(&acme, &ended, vec![step(1)], event())
        .await
        .unwrap();
    let purged = store
        .apply_retention(&acme, Timestamp::now().plus_seconds(60), event())
        .await
        .unwrap();
    assert_eq!(purged, 3, "two messages and one run");
    let kept = store.run(&acme, run.id).await.unwrap().unwrap();
    assert_eq!(
        (kept.status, kept.output, kept.steps.len()),
        (RunStatus::Completed, None, 0)
    );
    assert_eq!(
        store
            .delete_thread(&acme, run.thread_id, event())
            .await
            .unwrap(),
        Deletion::Deleted
    );
    assert!(store.run(&acme, run.id).await.unwrap().is_none());
}

fn doc(collection: &str, id: &str, external: Option<&str>, bytes: u64) -> DocumentInfo {
    DocumentInfo {
        id: id.into(),
        collection: collection.into(),
        external_id: external.map(str::to_owned),
        title: Some(format!("doc {id}")),
        chunks: 1,
        bytes,
        sha256: "0".repeat(64),
        embedding_model: None,
        metadata: json!({}),
        created_at: Timestamp::now(),
        updated_at: Timestamp::now(),
        fingerprint: None,
    }
}

fn chunk(text: &str) -> Vec<ChunkRow> {
    vec![ChunkRow {
        seq: 0,
        text: text.into(),
        heading: None,
        tokens: 3,
        embedding: None,
    }]
}

const ROOMY: StorageLimit = StorageLimit {
    max_documents: 10,
    max_bytes: 1_000,
};

#[tokio::test]
async fn knowledge_is_per_tenant_ranked_replaced_by_external_id_and_quota_bound() {
    let (_w, acme, globex) = two_tenants().await;
    let store = MemoryKnowledgeStore::new();
    let ev = || {
        NewAuditEvent::new(
            AuditAction::DocumentPut,
            "doc",
            Outcome::Success,
            RequestId::generate(),
        )
    };
    store
        .put_document(
            &acme,
            &doc("kb", "d1", Some("x"), 10),
            chunk("refund policy refund"),
            ev(),
            ROOMY,
        )
        .await
        .unwrap();
    store
        .put_document(
            &acme,
            &doc("kb", "d2", None, 10),
            chunk("shipping policy"),
            ev(),
            ROOMY,
        )
        .await
        .unwrap();
    let q = bulkhead_knowledge::fts_query("refund").unwrap();
    let found = store.fulltext(&acme, "kb", &q, None, 10).await.unwrap();
    assert_eq!(found.len(), 1);
    let hits = store.hits(&acme, &[found[0].0]).await.unwrap();
    assert_eq!(hits[0].document_id, "d1");
    let both = bulkhead_knowledge::fts_query("refund shipping").unwrap();
    let ranked = store.fulltext(&acme, "kb", &both, None, 10).await.unwrap();
    assert_eq!(ranked.len(), 2);
    assert!(ranked[0].1 >= ranked[1].1, "best first: {ranked:?}");
    // Another tenant finds nothing, not even the collection.
    assert!(
        store
            .fulltext(&globex, "kb", &q, None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(!store.collection_exists(&globex, "kb").await.unwrap());
    assert!(store.hits(&globex, &[found[0].0]).await.unwrap().is_empty());
    // The same external id replaces the document and keeps its id.
    let again = store
        .put_document(
            &acme,
            &doc("kb", "d3", Some("x"), 20),
            chunk("returns"),
            ev(),
            ROOMY,
        )
        .await
        .unwrap();
    assert_eq!(again.id, "d1");
    assert_eq!(store.storage_used(&acme).await.unwrap(), (2, 30));
    assert!(
        store
            .fulltext(&acme, "kb", &q, None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    // Over the quota: refused, nothing written.
    let tight = StorageLimit {
        max_documents: 2,
        max_bytes: 1_000,
    };
    let over = store
        .put_document(&acme, &doc("kb", "d4", None, 1), chunk("more"), ev(), tight)
        .await;
    assert!(
        matches!(over, Err(KnowledgeStoreError::Quota(_))),
        "{over:?}"
    );
    assert_eq!(store.storage_used(&acme).await.unwrap(), (2, 30));
    let listed = store.collections(&acme).await.unwrap();
    assert_eq!(
        (listed.len(), listed[0].documents, listed[0].chunks),
        (1, 2, 2)
    );
    assert!(store.delete_collection(&acme, "kb", ev()).await.unwrap());
    assert_eq!(store.storage_used(&acme).await.unwrap(), (0, 0));
}
