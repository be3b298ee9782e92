//! Bad input: every malformed request answers a 4xx problem and writes
//! nothing; request ids; unknown paths and methods.

use axum::body::Body;
use axum::http::Request;
use serde_json::{Value, json};

use crate::support::*;

async fn operator_events(app: &TestApp) -> usize {
    app.call("GET", "/admin/v1/audit", Some(OPERATOR_TOKEN), None)
        .await
        .body["events"]
        .as_array()
        .unwrap()
        .len()
}

#[tokio::test]
async fn malformed_tenant_bodies_are_refused_and_write_nothing() {
    let app = TestApp::new().await;
    let cases: Vec<(Value, u16, &str)> = vec![
        (json!({"id": 5}), 400, "invalid_body"),
        (json!({}), 400, "invalid_body"),
        (json!({"id": "acme", "colour": "red"}), 400, "invalid_body"),
        (json!({"id": "Bad_Id"}), 400, "invalid_body"),
        (json!({"id": "-acme"}), 400, "invalid_body"),
        (json!({"id": "a".repeat(64)}), 400, "invalid_body"),
        (json!({"id": "acme", "region": "EU!"}), 400, "invalid_body"),
        (
            json!({"id": "acme", "isolation": "hard"}),
            400,
            "invalid_body",
        ),
        (json!({"id": "acme", "name": ""}), 400, "validation_failed"),
        (
            json!({"id": "acme", "name": "a\u{0}b"}),
            400,
            "validation_failed",
        ),
        (
            json!({"id": "acme", "name": "x".repeat(201)}),
            400,
            "validation_failed",
        ),
        (json!([1, 2]), 400, "invalid_body"),
    ];
    for (body, status, code) in cases {
        let r = app
            .call(
                "POST",
                "/admin/v1/tenants",
                Some(OPERATOR_TOKEN),
                Some(body.clone()),
            )
            .await;
        assert_eq!(r.status, status, "{body}: {}", r.body);
        r.assert_problem(status, code);
    }
    let raw = |content_type: Option<&str>, body: Vec<u8>| {
        let mut req = Request::post("/admin/v1/tenants")
            .header("authorization", format!("Bearer {OPERATOR_TOKEN}"));
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        req.body(Body::from(body)).unwrap()
    };
    app.request(raw(Some("application/json"), b"{\"id\": \"acme\"".to_vec()))
        .await
        .assert_problem(400, "invalid_body");
    app.request(raw(None, b"{\"id\": \"acme\"}".to_vec()))
        .await
        .assert_problem(415, "unsupported_media_type");
    app.request(raw(Some("text/plain"), b"{\"id\": \"acme\"}".to_vec()))
        .await
        .assert_problem(415, "unsupported_media_type");
    let big = format!(
        "{{\"id\": \"acme\", \"name\": \"{}\"}}",
        "x".repeat(BODY_LIMIT)
    );
    let r = app
        .request(raw(Some("application/json"), big.into_bytes()))
        .await;
    r.assert_problem(413, "payload_too_large");

    let list = app
        .call("GET", "/admin/v1/tenants", Some(OPERATOR_TOKEN), None)
        .await;
    assert_eq!(list.body["tenants"], json!([]));
    assert_eq!(
        operator_events(&app).await,
        0,
        "a refused request left an audit event"
    );
    let partitions = std::fs::read_dir(app.dir.path().join("data/tenants"))
        .unwrap()
        .count();
    assert_eq!(partitions, 0, "a refused request left a partition behind");
}

#[tokio::test]
async fn duplicate_tenants_conflict_and_bad_patches_change_nothing() {
    let app = TestApp::new().await;
    let created = app.create_tenant("acme", "eu").await;
    let r = app
        .call(
            "POST",
            "/admin/v1/tenants",
            Some(OPERATOR_TOKEN),
            Some(json!({"id": "acme"})),
        )
        .await;
    r.assert_problem(409, "conflict");
    let events = operator_events(&app).await;
    for (body, code) in [
        (json!({}), "validation_failed"),
        (json!({"status": "deleted"}), "invalid_body"),
        (json!({"name": "ok", "owner": "me"}), "invalid_body"),
        (json!({"region": 3}), "invalid_body"),
        (json!({"name": "  "}), "validation_failed"),
    ] {
        let r = app
            .call(
                "PATCH",
                "/admin/v1/tenants/acme",
                Some(OPERATOR_TOKEN),
                Some(body.clone()),
            )
            .await;
        r.assert_problem(400, code);
    }
    let now = app
        .call("GET", "/admin/v1/tenants/acme", Some(OPERATOR_TOKEN), None)
        .await;
    assert_eq!(now.body, created, "a refused patch changed the tenant");
    assert_eq!(operator_events(&app).await, events);
    for missing in [
        "/admin/v1/tenants/nobody",
        "/admin/v1/tenants/NOT_VALID",
        "/admin/v1/tenants/%2e%2e",
    ] {
        app.call("GET", missing, Some(OPERATOR_TOKEN), None)
            .await
            .assert_problem(404, "not_found");
        app.call("DELETE", missing, Some(OPERATOR_TOKEN), None)
            .await
            .assert_problem(404, "not_found");
    }
    let r = app
        .call(
            "DELETE",
            "/admin/v1/tenants/acme/api-keys/not-a-uuid",
            Some(OPERATOR_TOKEN),
            None,
        )
        .await;
    r.assert_problem(404, "not_found");
}

#[tokio::test]
async fn query_parameters_are_validated() {
    let app = TestApp::new().await;
    app.create_tenant("acme", "eu").await;
    let (_, key) = app.api_key("acme", &["viewer"]).await;
    for q in [
        "limit=0",
        "limit=1001",
        "limit=abc",
        "after=-1",
        "colour=red",
    ] {
        let r = app
            .call("GET", &format!("/v1/audit?{q}"), Some(&key), None)
            .await;
        r.assert_problem(400, "invalid_parameter");
    }
}

#[tokio::test]
async fn request_ids_are_echoed_when_well_formed_and_generated_otherwise() {
    let app = TestApp::new().await;
    let r = app
        .call_with(
            "GET",
            "/healthz",
            None,
            None,
            &[("x-request-id", "client-abc.123")],
        )
        .await;
    assert_eq!(r.headers.get("x-request-id").unwrap(), "client-abc.123");
    let r = app
        .call_with("GET", "/v1/me", None, None, &[("x-request-id", "trace-42")])
        .await;
    assert_eq!(r.body["request_id"], "trace-42");
    for bad in ["has space", "", &"x".repeat(200), "semi;colon"] {
        let r = app
            .call_with("GET", "/healthz", None, None, &[("x-request-id", bad)])
            .await;
        let got = r
            .headers
            .get("x-request-id")
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned();
        assert_ne!(got, bad);
        assert!(bulkhead_core::RequestId::parse(&got).is_ok());
    }
}

#[tokio::test]
async fn unknown_paths_and_methods_answer_problems() {
    let app = TestApp::new().await;
    app.call("GET", "/nope", None, None)
        .await
        .assert_problem(404, "not_found");
    // Under /v1, outside the tenant plane's own resources: OpenAI's 404
    // (`openai_surface.rs` has the rest).
    let r = app.call("GET", "/v1/tenants/acme/me", None, None).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.body["error"]["code"], "unknown_url", "{}", r.body);
    app.call("GET", "/v1/agents/a/b/c/d", None, None)
        .await
        .assert_problem(404, "not_found");
    app.call("PUT", "/v1/me", None, None)
        .await
        .assert_problem(405, "method_not_allowed");
    app.call("DELETE", "/admin/v1/tenants", Some(OPERATOR_TOKEN), None)
        .await
        .assert_problem(405, "method_not_allowed");
}

#[tokio::test]
async fn deeply_nested_json_and_filters_are_refused_not_recursed_into() {
    // Tenant input that nests without bound must answer a 4xx, never
    // overflow a stack: JSON bodies (serde_json stops at 128 levels) and
    // knowledge filters (8 levels).
    let app = TestApp::new().await;
    app.create_tenant("acme", "eu").await;
    let (_, admin) = app.api_key("acme", &["admin"]).await;
    let r = app
        .call(
            "POST",
            "/v1/collections/docs/documents",
            Some(&admin),
            Some(json!({"content": "hello world"})),
        )
        .await;
    assert!(r.status < 300, "{}", r.body);
    let deep_json = format!("{}{}", "[".repeat(2000), "]".repeat(2000));
    for path in [
        "/v1/collections/docs/search",
        "/v1/policies",
        "/v1/agents/support/runs",
    ] {
        let method = if path == "/v1/policies" {
            "PUT"
        } else {
            "POST"
        };
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("authorization", format!("Bearer {admin}"))
            .header("content-type", "application/json")
            .body(Body::from(deep_json.clone()))
            .unwrap();
        let r = app.request(req).await;
        assert!(
            (400..500).contains(&r.status),
            "{path}: {} {}",
            r.status,
            r.body
        );
    }
    let mut filter = json!({"k": "v"});
    for _ in 0..40 {
        filter = json!({"$and": [filter]});
    }
    let r = app
        .call(
            "POST",
            "/v1/collections/docs/search",
            Some(&admin),
            Some(json!({"query": "x", "mode": "fulltext", "filter": filter})),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(
        r.body["detail"].as_str().unwrap().contains("nested"),
        "{}",
        r.body
    );
}

#[tokio::test]
async fn a_tenant_is_placed_only_in_a_region_the_deployment_serves() {
    let providers = r#"
[[regions]]
name = "eu"
[[regions]]
name = "us"
[[providers]]
name = "p-eu"
kind = "openai"
base_url = "https://api.openai.com/v1"
region = "eu"
"#;
    let app = TestApp::with_config("default_region = \"eu\"", providers).await;
    let events = operator_events(&app).await;
    for region in ["mars", "usa"] {
        let r = app
            .call(
                "POST",
                "/admin/v1/tenants",
                Some(OPERATOR_TOKEN),
                Some(json!({"id": "acme", "region": region})),
            )
            .await;
        r.assert_problem(400, "validation_failed");
        let detail = r.body["detail"].as_str().unwrap();
        assert!(
            detail.starts_with(&format!(
                "region: \"{region}\" is not one of this deployment's regions (eu, us)"
            )),
            "{detail}"
        );
    }
    assert_eq!(
        operator_events(&app).await,
        events,
        "a refusal wrote nothing"
    );
    // A declared region without a provider yet is served: a tenant may
    // wait there for its models.
    app.create_tenant("globex", "us").await;
    let created = app.create_tenant("acme", "eu").await;
    let r = app
        .call(
            "PATCH",
            "/admin/v1/tenants/acme",
            Some(OPERATOR_TOKEN),
            Some(json!({"region": "mars"})),
        )
        .await;
    r.assert_problem(400, "validation_failed");
    let now = app
        .call("GET", "/admin/v1/tenants/acme", Some(OPERATOR_TOKEN), None)
        .await;
    assert_eq!(now.body, created);
}
