//! The conformance suite on the SQLite store, and what only the embedded
//! layout can show: files on disk, crash leftovers, moved partitions.

use bulkhead_store::sqlite::SqliteStore;
use bulkhead_store::{ControlStore, StoreError, TenantStore};

use crate::conformance::{self, create, op, scope, tid};

fn open(dir: &std::path::Path) -> SqliteStore {
    SqliteStore::open(dir).unwrap()
}

#[tokio::test]
async fn conformance_tenants_crud() {
    conformance::tenants_crud(open).await;
}

#[tokio::test]
async fn conformance_partitions_are_isolated() {
    conformance::partitions_are_isolated(open).await;
}

#[tokio::test]
async fn conformance_deleted_tenants_leave_nothing_behind() {
    conformance::deleted_tenants_leave_nothing_behind(open).await;
}

#[tokio::test]
async fn conformance_api_keys_lifecycle() {
    conformance::api_keys_lifecycle(open).await;
}

#[tokio::test]
async fn conformance_chains_survive_restart_and_concurrency() {
    conformance::chains_survive_restart_and_concurrency(open).await;
}

#[tokio::test]
async fn conformance_alert_rules_and_events() {
    conformance::alert_rules_and_events(open).await;
}

#[tokio::test]
async fn orphaned_partitions_are_swept_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    create(&store, "acme").await;
    drop(store);
    // What a crash between "partition created" and "tenant committed", or
    // between "tenant deleted" and "files removed", leaves behind.
    let orphan = dir
        .path()
        .join("tenants")
        .join(bulkhead_core::TenantUid::generate().to_string());
    std::fs::create_dir_all(&orphan).unwrap();
    std::fs::write(orphan.join("tenant.db"), b"leftover").unwrap();
    let store = open(dir.path());
    assert!(!orphan.exists(), "orphan partition survived a restart");
    let s = scope(&store, "acme").await;
    assert!(
        !store
            .audit(
                &s,
                bulkhead_store::Page {
                    after: 0,
                    limit: 10
                }
            )
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn a_partition_moved_under_another_tenant_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    create(&store, "acme").await;
    create(&store, "globex").await;
    let a = scope(&store, "acme").await;
    let g = scope(&store, "globex").await;
    drop(store);
    // Someone copies acme's database over globex's.
    let tenants = dir.path().join("tenants");
    let from = tenants.join(a.partition().to_string()).join("tenant.db");
    let to = tenants.join(g.partition().to_string()).join("tenant.db");
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", to.display()));
    }
    std::fs::copy(&from, &to).unwrap();
    let store = open(dir.path());
    // The scope is still that of a live tenant; only the files are wrong.
    let r = store
        .audit(
            &g,
            bulkhead_store::Page {
                after: 0,
                limit: 10,
            },
        )
        .await;
    assert!(
        matches!(r, Err(StoreError::Internal(ref m)) if m.contains("does not belong")),
        "{:?}",
        r.map(|v| v.len())
    );
}

#[tokio::test]
async fn partition_directories_are_private_and_named_by_uid() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    create(&store, "acme").await;
    let a = scope(&store, "acme").await;
    let part = dir.path().join("tenants").join(a.partition().to_string());
    assert!(part.join("tenant.db").is_file());
    assert!(!dir.path().join("tenants").join("acme").exists());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&part).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
    }
    store.delete_tenant(&op(), &tid("acme")).await.unwrap();
    assert!(!part.exists());
}

/// Descriptors of this process open on files under `dir` (other tests of
/// the binary run at the same time and open their own).
#[cfg(target_os = "linux")]
fn open_fds_under(dir: &std::path::Path) -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|target| target.starts_with(dir))
        .count()
}

/// Thousands of tenants must not mean thousands of open files: partitions
/// beyond the limit are closed (least recently used first) and reopened on
/// demand.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn open_partitions_are_bounded_and_evicted_ones_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open_with_limit(dir.path(), 4).unwrap();
    let before = open_fds_under(dir.path());
    let mut scopes = Vec::new();
    for i in 0..24 {
        let id = format!("t{i}");
        create(&store, &id).await;
        scopes.push(scope(&store, &id).await);
    }
    let grown = open_fds_under(dir.path()).saturating_sub(before);
    // Four partitions of three files each (database, WAL, shared memory).
    assert!(
        grown <= 4 * 3,
        "{grown} more descriptors open after 24 tenants"
    );
    for s in &scopes {
        let events = store
            .audit(
                s,
                bulkhead_store::Page {
                    after: 0,
                    limit: 10,
                },
            )
            .await
            .unwrap();
        assert!(events.iter().all(|e| e.tenant.as_ref() == Some(s.tenant())));
        assert!(!events.is_empty());
    }
}

/// Usage rows written concurrently by many calls of one tenant are group
/// committed: every call returns after its own row is stored, the chain
/// stays intact and nothing is lost.
#[tokio::test]
async fn concurrent_usage_rows_are_all_written_in_chain_order() {
    use bulkhead_core::audit::{AuditAction, NewAuditEvent, Outcome, verify_chain};
    use bulkhead_gateway::GatewayStore;
    use bulkhead_gateway::usage::{Tokens, UsageGroup, UsageRecord};

    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    create(&store, "acme").await;
    let s = scope(&store, "acme").await;
    let mut tasks = Vec::new();
    for i in 0..50u64 {
        let store = store.clone();
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let usage = UsageRecord {
                id: format!("u{i}"),
                time: bulkhead_core::Timestamp::now(),
                request_id: format!("r{i}"),
                model: "small".into(),
                provider: "p".into(),
                region: "eu".into(),
                tokens: Tokens {
                    input: i,
                    output: 1,
                    cached: 0,
                },
                cost_nanos: 10,
                latency_ms: 1,
                status: "ok".into(),
                estimated: false,
                stream: false,
                kind: "model",
                agent: (i % 2 == 0).then(|| "support".to_owned()),
                run_id: (i % 2 == 0).then(|| format!("run{i}")),
                tool: None,
            };
            let event = NewAuditEvent::new(
                AuditAction::ModelCall,
                "model:small",
                Outcome::Success,
                s.request_id().clone(),
            );
            store.record_usage(&s, usage, event).await.unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let day_ago = bulkhead_core::Timestamp::now().plus_seconds(-86_400);
    let soon = bulkhead_core::Timestamp::now().plus_seconds(5);
    let rows = store
        .usage_summary(&s, day_ago, soon, &[UsageGroup::Day, UsageGroup::Model])
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].model.as_deref(), Some("small"));
    assert_eq!(rows[0].requests, 50);
    assert_eq!(rows[0].input_tokens, (0..50).sum::<u64>());
    assert_eq!(rows[0].cost_nanos, 500);
    // The ledger by agent: the runs' calls and the direct ones (no agent).
    let by_agent = store
        .usage_summary(&s, day_ago, soon, &[UsageGroup::Agent])
        .await
        .unwrap();
    let agents: Vec<(Option<&str>, u64)> = by_agent
        .iter()
        .map(|r| (r.agent.as_deref(), r.requests))
        .collect();
    assert_eq!(agents, vec![(None, 25), (Some("support"), 25)]);
    assert!(
        by_agent
            .iter()
            .all(|r| r.day.is_none() && r.model.is_none())
    );
    assert_eq!(store.spent_since(&s, day_ago).await.unwrap(), 500);
    assert_eq!(store.spent_since(&s, soon).await.unwrap(), 0);
    let events = store
        .audit(
            &s,
            bulkhead_store::Page {
                after: 0,
                limit: 1000,
            },
        )
        .await
        .unwrap();
    assert_eq!(
        events.iter().filter(|e| e.action == "model.call").count(),
        50
    );
    assert_eq!(
        verify_chain(&events, bulkhead_core::audit::GENESIS_HASH),
        Ok(events.len() as u64)
    );
}

/// The gateway answers before a call's usage row is committed; a read of
/// usage or audit that starts after the row was queued still includes it.
#[tokio::test]
async fn reads_include_usage_rows_queued_before_them() {
    use bulkhead_core::audit::{AuditAction, NewAuditEvent, Outcome};
    use bulkhead_gateway::GatewayStore;
    use bulkhead_gateway::usage::{Tokens, UsageGroup, UsageRecord};

    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    create(&store, "acme").await;
    let s = scope(&store, "acme").await;
    let mut writes = Vec::new();
    for i in 0..20u64 {
        let usage = UsageRecord {
            id: format!("q{i}"),
            time: bulkhead_core::Timestamp::now(),
            request_id: format!("r{i}"),
            model: "small".into(),
            provider: "p".into(),
            region: "eu".into(),
            tokens: Tokens {
                input: 1,
                output: 1,
                cached: 0,
            },
            cost_nanos: 1,
            latency_ms: 1,
            status: "ok".into(),
            estimated: false,
            stream: false,
            kind: "model",
            agent: None,
            run_id: None,
            tool: None,
        };
        let event = NewAuditEvent::new(
            AuditAction::ModelCall,
            "model:small",
            Outcome::Success,
            s.request_id().clone(),
        );
        // Queued, not awaited.
        writes.push(store.record_usage(&s, usage, event));
    }
    let day_ago = bulkhead_core::Timestamp::now().plus_seconds(-86_400);
    let rows = store
        .usage_summary(
            &s,
            day_ago,
            bulkhead_core::Timestamp::now().plus_seconds(5),
            &[UsageGroup::Day, UsageGroup::Model],
        )
        .await
        .unwrap();
    assert_eq!(rows.iter().map(|r| r.requests).sum::<u64>(), 20);
    let events = store
        .audit(
            &s,
            bulkhead_store::Page {
                after: 0,
                limit: 1000,
            },
        )
        .await
        .unwrap();
    assert_eq!(
        events.iter().filter(|e| e.action == "model.call").count(),
        20
    );
    for w in writes {
        w.await.unwrap();
    }
}

/// Concurrent writes of one tenant are committed in groups; a write that
/// fails inside a group rolls back alone, the others land, and the chain
/// stays intact.
#[tokio::test]
async fn a_failing_write_in_a_group_commit_rolls_back_alone() {
    use bulkhead_agent::store::{AgentStore, RunRecord, RunStatus, Step};
    use bulkhead_core::audit::{AuditAction, NewAuditEvent, Outcome, verify_chain};
    use bulkhead_core::{RunId, ThreadId, Timestamp};
    use serde_json::json;

    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    create(&store, "acme").await;
    let s = scope(&store, "acme").await;
    let run = RunRecord {
        id: RunId::generate(),
        thread_id: ThreadId::generate(),
        agent: "a".into(),
        principal: "p".into(),
        status: RunStatus::Running,
        created_at: Timestamp::now(),
        finished_at: None,
        output: None,
        error: None,
        input_tokens: 0,
        output_tokens: 0,
        steps: vec![],
    };
    let ev = |action: AuditAction| {
        NewAuditEvent::new(action, "run:x", Outcome::Success, s.request_id().clone())
    };
    store
        .begin_run(
            &s,
            &run,
            true,
            &json!({"role": "user", "content": "hi"}),
            ev(AuditAction::RunStart),
        )
        .await
        .unwrap();
    let mut tasks = Vec::new();
    // Seq 7 twice: exactly one of the two must fail (primary key).
    for seq in (1..=20u32).chain([7]) {
        let store = store.clone();
        let s = s.clone();
        let id = run.id;
        let event = ev(AuditAction::ToolCall);
        tasks.push(tokio::spawn(async move {
            let step = Step {
                seq,
                kind: "model_call".into(),
                data: json!({"n": seq}),
                time: Timestamp::now(),
            };
            let msg = json!({"role": "assistant", "content": format!("m{seq}")});
            let write = bulkhead_agent::store::StepWrite {
                step,
                message: Some(msg),
                event: Some(event),
            };
            store.append_steps(&s, id, vec![write]).await
        }));
    }
    let mut failed = 0;
    for t in tasks {
        if t.await.unwrap().is_err() {
            failed += 1;
        }
    }
    assert_eq!(failed, 1);
    let stored = store.run(&s, run.id).await.unwrap().unwrap();
    assert_eq!(stored.steps.len(), 20);
    // The failed write left neither its message nor its audit event.
    let messages = store.messages(&s, run.thread_id).await.unwrap().unwrap();
    assert_eq!(messages.len(), 21);
    let events = store
        .audit(
            &s,
            bulkhead_store::Page {
                after: 0,
                limit: 1000,
            },
        )
        .await
        .unwrap();
    assert_eq!(
        events
            .iter()
            .filter(|e| e.action == AuditAction::ToolCall)
            .count(),
        20
    );
    assert_eq!(
        verify_chain(&events, bulkhead_core::audit::GENESIS_HASH),
        Ok(events.len() as u64)
    );
}

/// Writes `docs` documents of `per_doc` chunks to collection `kb`; chunk
/// `i` of document `d` says "common filler" and, for the first `rare`
/// chunks overall, "zebra".
async fn seed_chunks(
    store: &SqliteStore,
    s: &bulkhead_auth::TenantScope,
    docs: usize,
    per_doc: usize,
    rare: usize,
) {
    use bulkhead_agent::knowledge::{ChunkRow, DocumentInfo, KnowledgeStore};
    use bulkhead_core::audit::{AuditAction, NewAuditEvent, Outcome};
    let mut n = 0usize;
    for d in 0..docs {
        let rows: Vec<ChunkRow> = (0..per_doc)
            .map(|i| {
                let word = if n + i < rare { " zebra" } else { "" };
                ChunkRow {
                    seq: i as u32,
                    text: format!("common filler text number {}{word}", n + i),
                    heading: None,
                    tokens: 6,
                    embedding: None,
                }
            })
            .collect();
        n += per_doc;
        let now = bulkhead_core::Timestamp::now();
        let info = DocumentInfo {
            id: format!("doc-{d}"),
            collection: "kb".into(),
            external_id: None,
            title: None,
            chunks: per_doc as u32,
            bytes: 0,
            sha256: String::new(),
            embedding_model: None,
            metadata: serde_json::json!({}),
            created_at: now,
            updated_at: now,
            fingerprint: None,
        };
        let event = NewAuditEvent::new(
            AuditAction::DocumentPut,
            "collection:kb",
            Outcome::Success,
            bulkhead_core::RequestId::generate(),
        );
        KnowledgeStore::put_document(store, s, &info, rows, event, UNLIMITED)
            .await
            .unwrap();
    }
}

const UNLIMITED: bulkhead_agent::knowledge::StorageLimit =
    bulkhead_agent::knowledge::StorageLimit {
        max_documents: u64::MAX,
        max_bytes: u64::MAX,
    };

#[tokio::test]
async fn a_document_over_the_storage_quota_is_refused_in_its_transaction_and_nothing_is_written() {
    use bulkhead_agent::knowledge::{
        DocumentInfo, KnowledgeStore, KnowledgeStoreError, StorageLimit,
    };
    use bulkhead_core::audit::{AuditAction, NewAuditEvent, Outcome};
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    create(&store, "acme").await;
    let s = scope(&store, "acme").await;
    // The tenant's canary document counts too: start from what is there.
    let (base_docs, base_bytes) = KnowledgeStore::storage_used(&store, &s).await.unwrap();
    let limit = StorageLimit {
        max_documents: base_docs + 2,
        max_bytes: base_bytes + 1000,
    };
    let doc = |id: &str, external: Option<&str>, bytes: u64| {
        let now = bulkhead_core::Timestamp::now();
        DocumentInfo {
            id: id.into(),
            collection: "kb".into(),
            external_id: external.map(str::to_owned),
            title: None,
            chunks: 0,
            bytes,
            sha256: String::new(),
            embedding_model: None,
            metadata: serde_json::json!({}),
            created_at: now,
            updated_at: now,
            fingerprint: None,
        }
    };
    let event = || {
        NewAuditEvent::new(
            AuditAction::DocumentPut,
            "collection:kb",
            Outcome::Success,
            bulkhead_core::RequestId::generate(),
        )
    };
    let put = |d: DocumentInfo| {
        let (store, s) = (&store, &s);
        async move { KnowledgeStore::put_document(store, s, &d, vec![], event(), limit).await }
    };
    put(doc("a", Some("x"), 10))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    put(doc("b", None, 10))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let used = KnowledgeStore::storage_used(&store, &s).await.unwrap();
    let over = put(doc("c", None, 10)).await;
    assert!(
        matches!(over, Err(KnowledgeStoreError::Quota(ref m)) if m.contains("max_documents")),
        "{over:?}"
    );
    assert_eq!(
        KnowledgeStore::storage_used(&store, &s).await.unwrap(),
        used,
        "nothing was written"
    );
    // Replacing a document by its external id frees its old place first.
    put(DocumentInfo {
        fingerprint: Some("fp-a2".into()),
        ..doc("a2", Some("x"), 20)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    // Found by its external id: the first id, the new content's fingerprint.
    let stored = KnowledgeStore::document_by_external_id(&store, &s, "kb", "x")
        .await
        .unwrap()
        .expect("the document with external id x");
    assert_eq!(
        (
            stored.id.as_str(),
            stored.bytes,
            stored.fingerprint.as_deref()
        ),
        ("a", 20, Some("fp-a2"))
    );
    assert!(
        KnowledgeStore::document_by_external_id(&store, &s, "kb", "y")
            .await
            .unwrap()
            .is_none()
    );
    // Bytes count too.
    KnowledgeStore::delete_document(&store, &s, "kb", "b", event())
        .await
        .unwrap();
    let too_big = put(doc("d", None, 5000)).await;
    assert!(
        matches!(too_big, Err(KnowledgeStoreError::Quota(ref m)) if m.contains("max_stored_bytes")),
        "{too_big:?}"
    );
}

#[tokio::test]
async fn very_common_terms_are_left_out_of_large_fulltext_queries_only() {
    use bulkhead_agent::knowledge::KnowledgeStore;
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    create(&store, "small").await;
    create(&store, "large").await;
    let small = scope(&store, "small").await;
    let large = scope(&store, "large").await;
    seed_chunks(&store, &small, 10, 100, 3).await;
    seed_chunks(&store, &large, 60, 100, 3).await;
    let q = bulkhead_knowledge::fts_query("common zebra").unwrap();

    // Below 5,000 chunks every term counts: "common" matches everything.
    let hits = KnowledgeStore::fulltext(&store, &small, "kb", &q, None, 50)
        .await
        .unwrap();
    assert_eq!(hits.len(), 50, "a small index scores every term");
    // (Chunk 1 is the tenant's canary, so the rare chunks are 2..=4.)
    assert!(
        hits[..3].iter().all(|(id, _)| (2..=4).contains(id)) && hits[3].1 < hits[2].1,
        "rare term ranks first: {hits:?}"
    );

    // Above it, a term in more than a tenth of the chunks is dropped, so
    // only the chunks with the rare term are scored and returned.
    let hits = KnowledgeStore::fulltext(&store, &large, "kb", &q, None, 50)
        .await
        .unwrap();
    let ids: Vec<i64> = hits.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids.len(), 3, "only the rare term's chunks: {ids:?}");

    // A query of common terms only keeps the rarest, so it still answers.
    let q = bulkhead_knowledge::fts_query("common filler").unwrap();
    let hits = KnowledgeStore::fulltext(&store, &large, "kb", &q, None, 10)
        .await
        .unwrap();
    assert_eq!(hits.len(), 10, "all-common query still answers");
}

/// Approval requests: a decision is a compare-and-set (one of two racing
/// decisions wins), `approved`/`denied` apply only before the expiry and
/// `expired` only after, the last decision claims the paused run once,
/// and another tenant finds nothing.
#[tokio::test]
async fn approval_decisions_are_compare_and_set_and_respect_expiry() {
    use bulkhead_agent::approval::{Approval, ApprovalStatus, Settled, arguments_hash};
    use bulkhead_agent::store::{AgentStore, RunRecord, RunStatus};
    use bulkhead_core::audit::{AuditAction, NewAuditEvent, Outcome};
    use bulkhead_core::{ApprovalId, RunId, ThreadId, Timestamp};
    use serde_json::json;

    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    create(&store, "acme").await;
    create(&store, "globex").await;
    let s = scope(&store, "acme").await;
    let other = scope(&store, "globex").await;
    let now = Timestamp::now();
    let mut run = RunRecord {
        id: RunId::generate(),
        thread_id: ThreadId::generate(),
        agent: "a".into(),
        principal: "p".into(),
        status: RunStatus::Running,
        created_at: now,
        finished_at: None,
        output: None,
        error: None,
        input_tokens: 3,
        output_tokens: 4,
        steps: vec![],
    };
    let ev = |action: AuditAction| {
        NewAuditEvent::new(action, "x", Outcome::Success, s.request_id().clone())
    };
    store
        .begin_run(
            &s,
            &run,
            true,
            &json!({"role": "user", "content": "hi"}),
            ev(AuditAction::RunStart),
        )
        .await
        .unwrap();
    let request = |n: u32| {
        let args = json!({"n": n});
        Approval {
            id: ApprovalId::generate(),
            status: ApprovalStatus::Pending,
            run_id: run.id,
            agent: "a".into(),
            tool: "t".into(),
            tool_call_id: format!("call_{n}"),
            connection: None,
            arguments_hash: arguments_hash(&args),
            arguments: args,
            summary: "s".into(),
            requested_by: "p".into(),
            requested_roles: vec![bulkhead_core::Role::Member],
            round: 1,
            created_at: now,
            expires_at: now.plus_seconds(60),
            decided_by: None,
            decided_at: None,
            comment: None,
        }
    };
    let (a, b) = (request(1), request(2));
    run.status = RunStatus::AwaitingApproval;
    store
        .pause_run(&s, &run, vec![], &[a.clone(), b.clone()])
        .await
        .unwrap();
    assert!(store.thread_paused(&s, run.thread_id).await.unwrap());
    assert_eq!(
        store.run(&s, run.id).await.unwrap().unwrap().status,
        RunStatus::AwaitingApproval
    );
    // Another tenant finds neither the requests nor a way to decide them.
    assert_eq!(store.approval(&other, a.id).await.unwrap(), None);
    assert!(
        store
            .approvals(&other, None, None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let foreign = store
        .settle_approval(
            &other,
            a.id,
            ApprovalStatus::Approved,
            None,
            now,
            ev(AuditAction::ApprovalApprove),
        )
        .await
        .unwrap();
    assert_eq!(foreign, None);
    // Expiry cannot apply early; a decision cannot apply late.
    let early = store
        .settle_approval(
            &s,
            a.id,
            ApprovalStatus::Expired,
            None,
            now,
            ev(AuditAction::ApprovalExpire),
        )
        .await
        .unwrap();
    assert!(matches!(early, Some(Settled::Unchanged(_))), "{early:?}");
    let late = store
        .settle_approval(
            &s,
            a.id,
            ApprovalStatus::Approved,
            None,
            now.plus_seconds(61),
            ev(AuditAction::ApprovalApprove),
        )
        .await
        .unwrap();
    assert!(matches!(late, Some(Settled::Unchanged(_))), "{late:?}");
    // Two racing decisions: exactly one changes it.
    let (x, y) = tokio::join!(
        store.settle_approval(
            &s,
            a.id,
            ApprovalStatus::Approved,
            Some("yes".into()),
            now,
            ev(AuditAction::ApprovalApprove)
        ),
        store.settle_approval(
            &s,
            a.id,
            ApprovalStatus::Denied,
            Some("no".into()),
            now,
            ev(AuditAction::ApprovalDeny)
        ),
    );
    let outcomes = [x.unwrap().unwrap(), y.unwrap().unwrap()];
    let changed: Vec<&Settled> = outcomes
        .iter()
        .filter(|o| matches!(o, Settled::Changed { .. }))
        .collect();
    assert_eq!(changed.len(), 1, "{outcomes:?}");
    // b is still pending: no resume yet.
    assert!(matches!(changed[0], Settled::Changed { resume: false, .. }));
    // b expires (after its time): the run is claimed, once.
    let last = store
        .settle_approval(
            &s,
            b.id,
            ApprovalStatus::Expired,
            None,
            now.plus_seconds(61),
            ev(AuditAction::ApprovalExpire),
        )
        .await
        .unwrap()
        .unwrap();
    match last {
        Settled::Changed { approval, resume } => {
            assert!(resume);
            assert_eq!(approval.status, ApprovalStatus::Expired);
            assert_eq!(approval.decided_by, None);
        }
        other => panic!("{other:?}"),
    }
    let stored = store.run(&s, run.id).await.unwrap().unwrap();
    assert_eq!(stored.status, RunStatus::Running);
    assert_eq!((stored.input_tokens, stored.output_tokens), (3, 4));
    assert!(!store.thread_paused(&s, run.thread_id).await.unwrap());
    // Exactly the decisions that changed something are in the chain.
    let events = store
        .audit(
            &s,
            bulkhead_store::Page {
                after: 0,
                limit: 100,
            },
        )
        .await
        .unwrap();
    let decided = events
        .iter()
        .filter(|e| e.action.starts_with("approval."))
        .count();
    assert_eq!(decided, 2);
    let listed = store
        .approvals(&s, Some(ApprovalStatus::Expired), Some(run.id), 10)
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, b.id);
    assert_eq!(listed[0].requested_roles, [bulkhead_core::Role::Member]);
}

/// A call's `in_flight` row is counted by its reservation while its
/// process lives (not by the ledger's spend, which would count it twice),
/// and billed at its estimate, once, with its audit event, by the next
/// process to open the partition.
#[tokio::test]
async fn a_call_left_in_flight_by_a_dead_process_is_billed_once_at_its_estimate() {
    use bulkhead_gateway::GatewayStore;
    use bulkhead_gateway::usage::{Tokens, UsageGroup, UsageRecord};

    let dir = tempfile::tempdir().unwrap();
    let row = |id: &str| UsageRecord {
        id: id.into(),
        time: bulkhead_core::Timestamp::now(),
        request_id: "r-crash".into(),
        model: "small".into(),
        provider: "p".into(),
        region: "eu".into(),
        tokens: Tokens {
            input: 100,
            output: 4096,
            cached: 0,
        },
        cost_nanos: 5_000,
        latency_ms: 0,
        status: "in_flight".into(),
        estimated: true,
        stream: true,
        kind: "model",
        agent: None,
        run_id: None,
        tool: None,
    };
    let day_ago = bulkhead_core::Timestamp::now().plus_seconds(-86_400);
    let later = bulkhead_core::Timestamp::now().plus_seconds(5);
    {
        let store = open(dir.path());
        create(&store, "acme").await;
        let s = scope(&store, "acme").await;
        store.begin_usage(&s, row("live")).await.unwrap();
        // Live: neither spend (its reservation counts it) nor a report line.
        assert_eq!(store.spent_since(&s, day_ago).await.unwrap(), 0);
        assert!(
            store
                .usage_summary(&s, day_ago, later, &[])
                .await
                .unwrap()
                .is_empty()
        );
    } // the process "dies" with the call in flight
    let store = open(dir.path());
    let s = scope(&store, "acme").await;
    assert_eq!(store.spent_since(&s, day_ago).await.unwrap(), 5_000);
    let lines = store
        .usage_summary(&s, day_ago, later, &[UsageGroup::Model])
        .await
        .unwrap();
    assert_eq!(
        (lines[0].requests, lines[0].output_tokens),
        (1, 4096),
        "{lines:?}"
    );
    let recovered: Vec<_> = store
        .audit(
            &s,
            bulkhead_store::Page {
                after: 0,
                limit: 1000,
            },
        )
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.action == "model.call")
        .collect();
    assert_eq!(recovered.len(), 1);
    assert_eq!(recovered[0].details["status"], "interrupted");
    assert_eq!(recovered[0].details["usage_estimated"], true);
    // Billed once: a third process finds nothing left to recover.
    drop(store);
    let store = open(dir.path());
    let s = scope(&store, "acme").await;
    assert_eq!(store.spent_since(&s, day_ago).await.unwrap(), 5_000);
}
