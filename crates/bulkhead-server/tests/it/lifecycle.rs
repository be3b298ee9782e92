//! Tenant lifecycle: suspension, deletion and re-creation, the audit
//! chains, metrics and the OpenAPI document.

use bulkhead_core::audit::{AuditEvent, GENESIS_HASH, verify_chain};
use serde_json::{Value, json};

use crate::support::*;

fn parse_events(events: &[Value]) -> Vec<AuditEvent> {
    events
        .iter()
        .map(|e| serde_json::from_value(e.clone()).unwrap())
        .collect()
}

#[tokio::test]
async fn suspension_blocks_and_resumption_restores() {
    let app = TestApp::new().await;
    app.create_tenant("acme", "eu").await;
    let (_, key) = app.api_key("acme", &["admin"]).await;
    let patch = |status: &'static str| {
        app.call(
            "PATCH",
            "/admin/v1/tenants/acme",
            Some(OPERATOR_TOKEN),
            Some(json!({"status": status})),
        )
    };
    assert_eq!(patch("suspended").await.body["status"], "suspended");
    app.call("GET", "/v1/me", Some(&key), None)
        .await
        .assert_problem(403, "tenant_suspended");
    assert_eq!(patch("active").await.body["status"], "active");
    assert_eq!(
        app.call("GET", "/v1/me", Some(&key), None).await.status,
        200
    );
    let actions: Vec<String> = app
        .audit(&key)
        .await
        .iter()
        .map(|e| {
            format!(
                "{}:{}",
                e["action"].as_str().unwrap(),
                e["outcome"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        actions,
        [
            "tenant.create:success",
            "data_key.create:success",
            "api_key.create:success",
            "tenant.update:success",
            "auth.failure:denied",
            "tenant.update:success"
        ]
    );
}

#[tokio::test]
async fn deleting_a_tenant_erases_it_and_a_new_one_starts_empty() {
    let app = TestApp::new().await;
    app.create_tenant("acme", "eu").await;
    let (_, old_key) = app.api_key("acme", &["admin"]).await;
    assert_eq!(app.audit(&old_key).await.len(), 3);
    let partitions = app.dir.path().join("data/tenants");
    assert_eq!(std::fs::read_dir(&partitions).unwrap().count(), 1);

    assert_eq!(
        app.call(
            "DELETE",
            "/admin/v1/tenants/acme",
            Some(OPERATOR_TOKEN),
            None
        )
        .await
        .status,
        204
    );
    assert_eq!(
        std::fs::read_dir(&partitions).unwrap().count(),
        0,
        "the partition survived deletion"
    );
    app.call("GET", "/admin/v1/tenants/acme", Some(OPERATOR_TOKEN), None)
        .await
        .assert_problem(404, "not_found");
    app.call("GET", "/v1/me", Some(&old_key), None)
        .await
        .assert_problem(401, "unauthenticated");

    app.create_tenant("acme", "us").await;
    app.call("GET", "/v1/me", Some(&old_key), None)
        .await
        .assert_problem(401, "unauthenticated");
    let (_, new_key) = app.api_key("acme", &["viewer"]).await;
    let events = app.audit(&new_key).await;
    assert_eq!(
        events.len(),
        3,
        "the re-created tenant sees old events: {events:?}"
    );
    assert_eq!(events[0]["details"]["region"], "us");
    let me = app.call("GET", "/v1/me", Some(&new_key), None).await;
    assert_eq!(me.body["region"], "us");

    // The operator's chain keeps the whole history.
    let ops = app
        .call("GET", "/admin/v1/audit", Some(OPERATOR_TOKEN), None)
        .await;
    let actions: Vec<&str> = ops.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "tenant.create",
            "api_key.create",
            "tenant.delete",
            "tenant.create",
            "api_key.create"
        ]
    );
}

#[tokio::test]
async fn audit_chains_verify_and_page() {
    let app = TestApp::new().await;
    app.create_tenant("acme", "eu").await;
    let (_, key) = app.api_key("acme", &["admin"]).await;
    for name in ["one", "two", "three"] {
        let r = app
            .call(
                "PATCH",
                "/admin/v1/tenants/acme",
                Some(OPERATOR_TOKEN),
                Some(json!({"name": name})),
            )
            .await;
        assert_eq!(r.status, 200);
    }
    let events = parse_events(&app.audit(&key).await);
    assert_eq!(verify_chain(&events, GENESIS_HASH), Ok(6));
    assert!(
        events
            .iter()
            .all(|e| !e.request_id.as_str().is_empty() && e.principal == "operator")
    );

    let ops = app
        .call("GET", "/admin/v1/audit", Some(OPERATOR_TOKEN), None)
        .await;
    let ops = parse_events(ops.body["events"].as_array().unwrap());
    assert_eq!(verify_chain(&ops, GENESIS_HASH), Ok(5));

    // Pages of two, following next_after, give the same chain.
    let mut paged = Vec::new();
    let mut after = 0;
    loop {
        let r = app
            .call(
                "GET",
                &format!("/v1/audit?limit=2&after={after}"),
                Some(&key),
                None,
            )
            .await;
        paged.extend(parse_events(r.body["events"].as_array().unwrap()));
        match r.body["next_after"].as_u64() {
            Some(n) => after = n,
            None => break,
        }
    }
    assert_eq!(paged, events);

    // A tampered copy fails verification.
    let mut tampered = events.clone();
    tampered[1].details = json!({"roles": ["admin", "superuser"]});
    assert!(verify_chain(&tampered, GENESIS_HASH).is_err());
}

#[tokio::test]
async fn metrics_count_requests_per_route_and_tenant() {
    let app = TestApp::new().await;
    app.create_tenant("acme", "eu").await;
    let (_, key) = app.api_key("acme", &["viewer"]).await;
    app.call("GET", "/v1/me", Some(&key), None).await;
    app.call("GET", "/v1/me", Some("bk_nope"), None).await;
    let text = app.call("GET", "/metrics", None, None).await.body;
    let text = text.as_str().unwrap();
    assert!(
        text.contains(
            r#"bulkhead_http_requests_total{method="GET",route="/v1/me",status="200"} 1"#
        ),
        "{text}"
    );
    assert!(
        text.contains(r#"bulkhead_tenant_requests_total{tenant="acme"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"bulkhead_auth_failures_total{reason="invalid_credential"} 1"#),
        "{text}"
    );
    assert!(!text.contains(&key), "a key reached the metrics");
}

#[tokio::test]
async fn health_and_openapi_are_public() {
    let app = TestApp::new().await;
    let r = app.call("GET", "/healthz", None, None).await;
    assert_eq!((r.status, r.body), (200, json!({"status": "ok"})));
    let doc = app.call("GET", "/openapi.json", None, None).await.body;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    assert!(doc["paths"]["/v1/me"]["get"].is_object());
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
}

#[tokio::test]
async fn metrics_can_require_a_token() {
    let app = TestApp::with_server_settings("metrics_token = \"env:METRICS_TOKEN\"").await;
    app.call("GET", "/metrics", None, None)
        .await
        .assert_problem(401, "unauthenticated");
    app.call("GET", "/metrics", Some(OPERATOR_TOKEN), None)
        .await
        .assert_problem(401, "unauthenticated");
    let r = app.call("GET", "/metrics", Some(METRICS_TOKEN), None).await;
    assert_eq!(r.status, 200);
    assert!(
        r.body
            .as_str()
            .unwrap()
            .contains("bulkhead_auth_failures_total{reason=\"metrics_token\"} 2")
    );
}

/// The request timeout, on the real middleware, with tokio's paused clock
/// instead of a real wait: the slow handler's hour passes instantly.
#[tokio::test(start_paused = true)]
async fn slow_requests_time_out_with_a_problem() {
    use axum::routing::get;
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[server]\ndata_dir = \"{}\"\nrequest_timeout_s = 2\n[operator]\ntoken = \"env:OP\"\n",
        dir.path().join("data").display()
    );
    let env = |n: &str| (n == "OP").then(|| OPERATOR_TOKEN.to_owned());
    let config = bulkhead_core::config::load(&text, &env).unwrap();
    let state = bulkhead_server::boot::boot(&config, dir.path())
        .await
        .unwrap()
        .state;
    let router = axum::Router::new()
        .route(
            "/slow",
            // Never answers: the request timeout must end it.
            get(std::future::pending::<&str>),
        )
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            bulkhead_server::request::middleware,
        ))
        .with_state(state.clone());
    let app = TestApp {
        router,
        state,
        store: bulkhead_store::sqlite::SqliteStore::open(&dir.path().join("other")).unwrap(),
        dir,
    };
    let r = app.call("GET", "/slow", None, None).await;
    r.assert_problem(504, "timeout");
    assert!(r.body["detail"].as_str().unwrap().contains("2 seconds"));
}
