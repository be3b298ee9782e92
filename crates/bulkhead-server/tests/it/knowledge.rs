//! Knowledge collections through the router: per-tenant ingestion and
//! search (full text, vector, hybrid) that never crosses tenants,
//! idempotent re-ingestion, deletion, filters, and bad input.

use bulkhead_testkit::FakeProvider;
use serde_json::{Value, json};

use crate::support::*;

fn tables(fake: &FakeProvider) -> String {
    format!(
        r#"
[[providers]]
name = "fake-eu"
kind = "openai"
base_url = "{}/v1"
region = "eu"
credential = "env:FAKE_KEY"
[[embedding_models]]
name = "embed"
provider = "fake-eu"
upstream = "text-embedding-3-small"
dimensions = 64
[knowledge]
embedding_model = "embed"
"#,
        fake.base_url()
    )
}

async fn app() -> (FakeProvider, TestApp, String, String) {
    let fake = FakeProvider::start().await;
    // Document bodies exceed the default 4 KiB test limit.
    let app = TestApp::with_config("max_body_bytes = 65536", &tables(&fake)).await;
    app.create_tenant("acme", "eu").await;
    app.create_tenant("globex", "eu").await;
    let (_, acme) = app.api_key("acme", &["admin"]).await;
    let (_, globex) = app.api_key("globex", &["admin"]).await;
    (fake, app, acme, globex)
}

async fn put(app: &TestApp, key: &str, collection: &str, body: Value) -> (u16, Value) {
    let r = app
        .call(
            "POST",
            &format!("/v1/collections/{collection}/documents"),
            Some(key),
            Some(body),
        )
        .await;
    (r.status, r.body)
}

async fn search(app: &TestApp, key: &str, collection: &str, body: Value) -> Value {
    let r = app
        .call(
            "POST",
            &format!("/v1/collections/{collection}/search"),
            Some(key),
            Some(body),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.body
}

fn texts(result: &Value) -> Vec<String> {
    result["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["text"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn each_tenant_searches_only_its_own_chunks_in_every_mode() {
    let (_fake, app, acme, globex) = app().await;
    let docs = [
        (
            &acme,
            "Refund policy: acme refunds within 30 days of purchase.",
        ),
        (&acme, "Shipping: acme ships worldwide from Berlin."),
        (
            &globex,
            "Refund policy: globex refunds within 14 days of purchase.",
        ),
        (&globex, "Shipping: globex ships only inside the US."),
    ];
    for (key, text) in docs {
        let (status, body) = put(&app, key, "faq", json!({"content": text})).await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(body["chunks"], 1);
        assert_eq!(body["embedding_model"], "embed");
    }
    for (key, own, other) in [(&acme, "acme", "globex"), (&globex, "globex", "acme")] {
        for mode in ["fulltext", "vector", "hybrid"] {
            // The exact text of the *other* tenant's chunk: the best possible
            // match for vectors and words alike, and still never returned.
            let query = format!("Refund policy: {other} refunds within 14 days of purchase.");
            let r = search(
                &app,
                key,
                "faq",
                json!({"query": query, "mode": mode, "top_k": 10}),
            )
            .await;
            assert_eq!(r["mode"], mode);
            let found = texts(&r);
            assert!(!found.is_empty(), "{mode}: {r}");
            assert!(
                found.iter().all(|t| t.contains(own) && !t.contains(other)),
                "{mode}: {found:?}"
            );
        }
    }
    // Full text ranks the matching chunk first.
    let r = search(
        &app,
        &acme,
        "faq",
        json!({"query": "refunds purchase", "mode": "fulltext"}),
    )
    .await;
    assert!(texts(&r)[0].starts_with("Refund policy: acme"));
    // Vector search finds a chunk by its own text with similarity 1.
    let r = search(
        &app,
        &acme,
        "faq",
        json!({"query": "Shipping: acme ships worldwide from Berlin.", "mode": "vector", "top_k": 1}),
    )
    .await;
    assert!(
        (r["results"][0]["score"].as_f64().unwrap() - 1.0).abs() < 1e-4,
        "{r}"
    );
}

#[tokio::test]
async fn documents_are_replaced_by_external_id_deleted_and_filtered() {
    let (_fake, app, acme, globex) = app().await;
    let long = (0..40)
        .map(|i| format!("## Part {i}\n\nSection {i} talks about topic{i} in some detail. "))
        .collect::<String>();
    let (s, first) = put(
        &app,
        &acme,
        "manual",
        json!({"content": format!("# Manual\n\n{long}"), "format": "markdown", "external_id": "man-1",
               "title": "Manual", "metadata": {"lang": "en", "version": 1}}),
    )
    .await;
    assert_eq!(s, 201, "{first}");
    assert!(first["chunks"].as_u64().unwrap() > 1);
    let (s, again) = put(
        &app,
        &acme,
        "manual",
        json!({"content": "# Manual\n\nA much shorter version about topic7.", "format": "markdown",
               "external_id": "man-1", "metadata": {"lang": "en", "version": 2}}),
    )
    .await;
    assert_eq!(s, 200, "{again}");
    assert_eq!(again["id"], first["id"]);
    assert_eq!(again["chunks"], 1);
    let (_, other) = put(
        &app,
        &acme,
        "manual",
        json!({"content": "topic7 in German", "metadata": {"lang": "de"}}),
    )
    .await;
    let r = search(
        &app,
        &acme,
        "manual",
        json!({"query": "topic7", "mode": "fulltext"}),
    )
    .await;
    assert_eq!(r["results"].as_array().unwrap().len(), 2);
    // The old version's chunks are gone.
    let r = search(
        &app,
        &acme,
        "manual",
        json!({"query": "topic12", "mode": "fulltext"}),
    )
    .await;
    assert!(r["results"].as_array().unwrap().is_empty(), "{r}");
    let r = search(
        &app,
        &acme,
        "manual",
        json!({"query": "topic7", "filter": {"lang": "de"}, "mode": "hybrid"}),
    )
    .await;
    assert_eq!(texts(&r), ["topic7 in German"]);
    let r = search(
        &app,
        &acme,
        "manual",
        json!({"query": "topic7", "filter": {"version": {"$gte": 2}}}),
    )
    .await;
    assert_eq!(r["results"].as_array().unwrap().len(), 1);
    assert_eq!(r["results"][0]["heading"], "Manual");
    let list = app.call("GET", "/v1/collections", Some(&acme), None).await;
    assert_eq!(list.body["collections"][0]["documents"], 2);
    // Another tenant cannot delete or see it.
    let id = other["id"].as_str().unwrap();
    let r = app
        .call(
            "DELETE",
            &format!("/v1/collections/manual/documents/{id}"),
            Some(&globex),
            None,
        )
        .await;
    r.assert_problem(404, "not_found");
    let r = app
        .call("GET", "/v1/collections", Some(&globex), None)
        .await;
    assert_eq!(r.body["collections"], json!([]));
    let r = app
        .call(
            "DELETE",
            &format!("/v1/collections/manual/documents/{id}"),
            Some(&acme),
            None,
        )
        .await;
    assert_eq!(r.status, 204);
    let r = search(
        &app,
        &acme,
        "manual",
        json!({"query": "German", "mode": "fulltext"}),
    )
    .await;
    assert!(r["results"].as_array().unwrap().is_empty());
    let r = app
        .call("DELETE", "/v1/collections/manual", Some(&globex), None)
        .await;
    r.assert_problem(404, "not_found");
    let r = app
        .call("DELETE", "/v1/collections/manual", Some(&acme), None)
        .await;
    assert_eq!(r.status, 204);
    let r = app
        .call(
            "POST",
            "/v1/collections/manual/search",
            Some(&acme),
            Some(json!({"query": "x"})),
        )
        .await;
    r.assert_problem(404, "not_found");
    let events = app.audit(&acme).await;
    for action in ["document.put", "document.delete", "collection.delete"] {
        assert!(events.iter().any(|e| e["action"] == action), "{action}");
    }
}

#[tokio::test]
async fn bad_input_is_refused_and_stores_nothing() {
    let (fake, app, acme, _) = app().await;
    let cases = [
        (json!({"content": "   "}), 400, "empty_document"),
        (
            json!({"content": "x".repeat(3 * 1024 * 1024)}),
            413,
            "document_too_large",
        ),
        (
            json!({"content": "ok", "format": "pdf"}),
            400,
            "validation_failed",
        ),
        (
            json!({"content": "ok", "metadata": "not an object"}),
            400,
            "invalid_metadata",
        ),
        (
            json!({"content": "ok", "external_id": ""}),
            400,
            "invalid_name",
        ),
        (json!({"content": "ok", "unknown": 1}), 400, "invalid_body"),
    ];
    for (body, status, code) in cases {
        let (s, b) = put(&app, &acme, "kb", body).await;
        assert_eq!((s, b["code"].as_str().unwrap_or("")), (status, code), "{b}");
    }
    let (s, b) = put(&app, &acme, "UPPER", json!({"content": "ok"})).await;
    assert_eq!(
        (s, b["code"].as_str().unwrap()),
        (400, "invalid_name"),
        "{b}"
    );
    // Nothing was stored, and no embedding was paid for the refused ones.
    let r = app.call("GET", "/v1/collections", Some(&acme), None).await;
    assert_eq!(r.body["collections"], json!([]));
    assert_eq!(fake.request_count(), 0);
    let (s, _) = put(&app, &acme, "kb", json!({"content": "something"})).await;
    assert_eq!(s, 201);
    for (body, code) in [
        (
            json!({"query": "x", "filter": {"$where": 1}}),
            "invalid_filter",
        ),
        (json!({"query": "x", "top_k": 0}), "validation_failed"),
        (json!({"query": ""}), "validation_failed"),
        (json!({"query": "x", "mode": "magic"}), "validation_failed"),
    ] {
        let r = app
            .call("POST", "/v1/collections/kb/search", Some(&acme), Some(body))
            .await;
        r.assert_problem(400, code);
    }
    let r = app
        .call(
            "POST",
            "/v1/collections/nope/search",
            Some(&acme),
            Some(json!({"query": "x"})),
        )
        .await;
    r.assert_problem(404, "not_found");
}

#[tokio::test]
async fn a_collection_search_never_returns_or_loses_to_another_collection() {
    let (_fake, app, acme, _) = app().await;
    // Collection "noise" ranks far better for "apple" than "target" does.
    for i in 0..30 {
        let (s, _) = put(
            &app,
            &acme,
            "noise",
            json!({"content": format!("apple apple apple apple {i}")}),
        )
        .await;
        assert_eq!(s, 201);
    }
    let (s, _) = put(
        &app,
        &acme,
        "target",
        json!({"content": "one apple among many other words here"}),
    )
    .await;
    assert_eq!(s, 201);
    let r = search(
        &app,
        &acme,
        "target",
        json!({"query": "apple", "mode": "fulltext", "top_k": 1}),
    )
    .await;
    assert_eq!(texts(&r), ["one apple among many other words here"]);
    let r = search(
        &app,
        &acme,
        "noise",
        json!({"query": "apple", "mode": "fulltext", "top_k": 50}),
    )
    .await;
    assert_eq!(r["results"].as_array().unwrap().len(), 30);
    assert!(texts(&r).iter().all(|t| t.starts_with("apple apple")));
}

#[tokio::test]
async fn storage_quotas_bound_what_a_tenant_stores_and_refusals_pay_no_embedding() {
    let (fake, app, acme, globex) = app().await;
    let r = app
        .call(
            "PATCH",
            "/admin/v1/tenants/acme",
            Some(OPERATOR_TOKEN),
            Some(json!({"quotas": {"max_documents": 3, "max_stored_bytes": 4000}})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let mut stored = 0;
    loop {
        let (s, b) = put(
            &app,
            &acme,
            "kb",
            json!({"content": format!("doc {stored}")}),
        )
        .await;
        if s != 201 {
            assert_eq!(
                (s, b["code"].as_str().unwrap()),
                (403, "storage_quota_exceeded"),
                "{b}"
            );
            assert!(
                b["detail"].as_str().unwrap().contains("max_documents"),
                "{b}"
            );
            break;
        }
        stored += 1;
        assert!(stored <= 3, "stored past the quota");
    }
    // The tenant's own canary document counts against it as well.
    assert!((2..=3).contains(&stored), "{stored}");
    let paid = fake.request_count();
    let (s, _) = put(&app, &acme, "kb", json!({"content": "one more"})).await;
    assert_eq!(s, 403);
    assert_eq!(
        fake.request_count(),
        paid,
        "a refused document paid for no embedding"
    );
    // Replacing a document by its external id is within the quota.
    let (s, b) = put(
        &app,
        &acme,
        "kb2",
        json!({"content": "x", "external_id": "e"}),
    )
    .await;
    assert!(s == 201 || s == 403, "{b}");
    // Bytes count too; another tenant's quota is its own.
    let (s, b) = put(&app, &globex, "kb", json!({"content": "y".repeat(5000)})).await;
    assert_eq!(s, 201, "{b}");
}

#[tokio::test]
async fn a_deleted_tenants_vectors_leave_memory() {
    let (_fake, app, acme, globex) = app().await;
    for key in [&acme, &globex] {
        let (s, b) = put(&app, key, "kb", json!({"content": "vectors for the cache"})).await;
        assert_eq!(s, 201, "{b}");
        search(
            &app,
            key,
            "kb",
            json!({"query": "vectors", "mode": "vector"}),
        )
        .await;
    }
    let (_, before) = app.state.knowledge.cache_usage();
    assert_eq!(before, 2, "one cached index per tenant");
    app.delete_tenant("acme").await;
    let (bytes, after) = app.state.knowledge.cache_usage();
    assert_eq!(after, 1, "acme's index was dropped with it");
    assert!(bytes > 0 && bytes <= 512 * 1024 * 1024);
}

/// Retrieval inside a run (the automatic context and the built-in search
/// tool) pays for embedding calls: their ledger rows and audit events name
/// the agent and the run, so the agent's cost includes them.
#[tokio::test]
async fn a_runs_retrieval_embeddings_are_billed_to_its_agent_and_run() {
    use bulkhead_testkit::Reply;
    let fake = FakeProvider::start().await;
    let extra = r#"
[[models]]
name = "small"
provider = "fake-eu"
upstream = "gpt-4o-mini"
[[agents]]
name = "kb"
model = "small"
prompt = "Answer from the knowledge base."
knowledge = ["faq"]
"#;
    let app = TestApp::with_config(
        "max_body_bytes = 65536",
        &format!("{}{extra}", tables(&fake)),
    )
    .await;
    app.create_tenant("acme", "eu").await;
    let (_, acme) = app.api_key("acme", &["admin"]).await;
    let (status, body) = put(
        &app,
        &acme,
        "faq",
        json!({"content": "Our refund window is 30 days.", "title": "Refunds"}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    fake.push_all([
        Reply::tool_call("search_knowledge", json!({"query": "refund window"})),
        Reply::text("30 days."),
    ]);
    let r = app
        .call(
            "POST",
            "/v1/agents/kb/runs",
            Some(&acme),
            Some(json!({"input": "What is the refund window?"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["status"], "completed", "{}", r.body);
    let run_id = r.body["id"].as_str().unwrap().to_owned();
    let r = app
        .call("GET", "/v1/usage?group_by=agent,model", Some(&acme), None)
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let rows = r.body["rows"].as_array().cloned().unwrap_or_default();
    let embed = |agent: Value| {
        rows.iter()
            .filter(|row| row["model"] == "embed" && row["agent"] == agent)
            .map(|row| row["requests"].as_u64().unwrap())
            .sum::<u64>()
    };
    // The document's own embedding is nobody's run; the context search
    // and the tool's search are the run's.
    assert_eq!(embed(json!("kb")), 2, "{}", r.body);
    assert_eq!(embed(Value::Null), 1, "{}", r.body);
    let events = app.audit(&acme).await;
    let in_run: Vec<&Value> = events
        .iter()
        .filter(|e| e["action"] == "model.embed" && e["run_id"] == run_id.as_str())
        .collect();
    assert_eq!(in_run.len(), 2, "{events:?}");
    assert!(in_run.iter().all(|e| e["agent"] == "kb"));
}

/// Ingesting a document again with the same external id, content, format,
/// title and metadata does nothing — no embedding is paid for, nothing is
/// written or audited — and says so; any change re-ingests it.
#[tokio::test]
async fn an_unchanged_document_is_not_embedded_again() {
    let (fake, app, acme, _) = app().await;
    let doc = json!({"external_id": "faq", "title": "FAQ", "content": "Refunds take 30 days.",
        "metadata": {"team": "support"}});
    let (status, first) = put(&app, &acme, "kb", doc.clone()).await;
    assert_eq!(
        (status, first["status"].as_str()),
        (201, Some("created")),
        "{first}"
    );
    let embeds = || {
        fake.requests()
            .iter()
            .filter(|r| r.path.ends_with("/embeddings"))
            .count()
    };
    let audited = || async {
        app.audit(&acme)
            .await
            .iter()
            .filter(|e| e["action"] == "document.put")
            .count()
    };
    let (paid, events) = (embeds(), audited().await);
    assert_eq!(paid, 1);
    let (status, again) = put(&app, &acme, "kb", doc.clone()).await;
    assert_eq!(
        (status, again["status"].as_str()),
        (200, Some("unchanged")),
        "{again}"
    );
    assert_eq!(again["id"], first["id"]);
    assert_eq!(
        again["updated_at"], first["updated_at"],
        "nothing was written"
    );
    assert_eq!(embeds(), paid, "nothing was embedded again");
    assert_eq!(audited().await, events, "nothing was audited");
    // Each part of the fingerprint counts.
    for change in [
        json!({"content": "Refunds take 14 days."}),
        json!({"title": "Refunds"}),
        json!({"metadata": {"team": "billing"}}),
        json!({"format": "markdown"}),
    ] {
        let mut changed = doc.clone();
        for (k, v) in change.as_object().unwrap() {
            changed[k] = v.clone();
        }
        let (status, body) = put(&app, &acme, "kb", changed.clone()).await;
        assert_eq!(
            (status, body["status"].as_str()),
            (200, Some("replaced")),
            "{change}: {body}"
        );
        let (_, same) = put(&app, &acme, "kb", changed).await;
        assert_eq!(same["status"], "unchanged", "{change}");
        // Back to the original for the next change.
        let (_, back) = put(&app, &acme, "kb", doc.clone()).await;
        assert_eq!(back["status"], "replaced");
    }
}
